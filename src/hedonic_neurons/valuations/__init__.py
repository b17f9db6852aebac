"""valuations"""
