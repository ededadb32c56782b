"""codenet.hw"""
