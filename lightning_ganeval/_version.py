"""The package version, in a leaf module that any layer may import (the package root imports everything)."""

__version__ = "0.2.0"
