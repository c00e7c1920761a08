"""slimkit.nas"""
