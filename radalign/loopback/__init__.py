"""Loopback peers that ship with the product: a strict FHIR server and an HL7 MLLP listener.

The demo delivers to them (so it shows a full round trip without an EHR or a RIS) and the tests
use them as the far end; they live here, not in `radalign.testing`, because shipped code (the
demo) must not import the test harnesses.
"""
