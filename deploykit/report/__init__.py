"""Generic rendering: the block model (Markdown, HTML and text from the same blocks), number formatting, masks and
class-damage pictures, the parity report and the bench plots. The deploy report is composed in deploykit.pipeline."""
