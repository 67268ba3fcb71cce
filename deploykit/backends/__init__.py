"""Backends only: the table and protocol (base.py: BACKENDS, Availability, Compiled) and one folder per backend."""
