"""The platform's implementation, one folder per component or seam."""
