"""Gateway: DICOM C-STORE / STOW-RS / HTTP intake -> de-identified studies on the study topic."""
