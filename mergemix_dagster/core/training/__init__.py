"""core/training"""
