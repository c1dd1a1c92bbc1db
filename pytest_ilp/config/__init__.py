"""Settings: every option's flag, ini key and ilp.yaml key, read into one frozen object."""
