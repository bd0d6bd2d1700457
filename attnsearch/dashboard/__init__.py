"""The live terminal dashboard of a search: state (plain data), views (rich renderables), live (the screen)."""
