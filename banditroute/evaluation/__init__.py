"""Evaluation on the logs (through ``ope``): candidate policies, the report, calibration."""
