"""The distiller: a frozen teacher detector beside a student, with a pluggable KD loss."""
