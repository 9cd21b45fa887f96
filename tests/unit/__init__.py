"""Unit tests of pure logic, with fakes where a seam needs one."""
