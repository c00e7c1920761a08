"""slimkit.profile"""
