"""core/merge/methods"""
