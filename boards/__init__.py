"""codenet.boards"""
