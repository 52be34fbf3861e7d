"""korch: does this patch series change how the kernel performs?"""

__version__ = "0.1.0"
