"""nomp's tests."""
