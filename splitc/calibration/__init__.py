"""Measuring a split's accuracy on calibration data: the data, the probes and the certified bound."""
