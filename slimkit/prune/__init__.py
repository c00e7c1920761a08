"""slimkit.prune"""
