"""Review service: the radiologist's worklist, study page, sign-off and agreement page (port 18106)."""
