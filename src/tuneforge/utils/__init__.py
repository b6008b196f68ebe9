"""Small helpers shared by every layer (errors, paths, console). Imports nothing from tuneforge."""
