"""What every command prints through."""

from rich.console import Console

console = Console()
