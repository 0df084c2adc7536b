print("ssi-bench")
