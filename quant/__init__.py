"""codenet.quant"""
