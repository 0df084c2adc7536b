// ssid: the node daemon (issue "Cluster core").
print("ssid: not built yet")
