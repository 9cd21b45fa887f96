"""The deployment profiles in deploy/, started for real."""
