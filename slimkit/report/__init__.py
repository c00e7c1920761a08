"""slimkit.report"""
