"""Everything people read: tables, number formatting, plots, the deploy report."""
