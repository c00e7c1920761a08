"""slimkit.train"""
