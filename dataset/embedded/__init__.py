"""Generators of the embedded offline tasks: LaMP-format data made from a seed, no download."""
