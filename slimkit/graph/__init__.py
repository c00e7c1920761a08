"""slimkit.graph"""
