"""The MNIST ODE-Net of experiments/configs/mnist.yaml, reproduced by `make reproduce-mnist`."""
