"""`cl`: the operators' command line (SPEC §9), with the services' settings (CL_* variables)."""
