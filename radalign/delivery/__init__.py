"""Delivery of reports to where radiologists work: PACS (DICOM C-STORE, STOW-RS) and FHIR servers.

Pure core (`core.DeliveryCore`) over configured destinations (`destinations`), one sender per
kind (`senders`) and delivery records (`records`); `services/delivery/agent.py` is the Faust
adapter consuming radalign.report.drafted.v1.
"""
