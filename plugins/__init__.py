"""Environment-specific implementations, grouped by the seam they plug into."""
