"""prescription_check."""
