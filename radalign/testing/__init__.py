"""Harnesses for tests and benchmarks: private embedded stacks on free ports, sample DICOM
builders, a Triton serving the concept model. Runtime code never imports this package (a test
over the import graph checks it)."""
