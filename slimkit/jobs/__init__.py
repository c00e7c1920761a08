"""slimkit.jobs"""
