"""codenet.sim"""
