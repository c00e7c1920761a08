"""slimkit.distill"""
