"""cdflow's benchmark suite (`make bench`)."""
