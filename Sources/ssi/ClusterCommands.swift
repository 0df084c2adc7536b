import ArgumentParser

// Cluster commands (`ssi nodes`, `ssi cluster`, `ssi kddm`): issue "Cluster core".
let clusterCommands: [ParsableCommand.Type] = []
