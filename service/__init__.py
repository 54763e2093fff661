"""The BentoML REST service for the promoted best models, and promotion into its model store."""
