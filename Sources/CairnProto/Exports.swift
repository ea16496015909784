// The messages live in CairnMessages (no gRPC, so the fuzz driver's sanitized build need
// not compile gRPC); whoever imports the services gets the messages too.
@_exported import CairnMessages
