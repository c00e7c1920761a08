"""slimkit.layers"""
