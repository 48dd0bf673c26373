"""kvideo: Kandinsky Video text-to-video generation, fine-tuning and evaluation."""
__version__ = "0.1.0"
