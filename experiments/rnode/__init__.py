"""RNODE against no regularisation (digits, MNIST ODE-Net), reproduced by `make reproduce-rnode`."""
