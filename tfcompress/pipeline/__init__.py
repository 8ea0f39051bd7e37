"""Recipes, the run of one recipe, batches of them and the folder cache that serves repeated runs."""
