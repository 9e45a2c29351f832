package api

// Handshake authenticates on an already connected socket (a test wraps it to see what is read).
var Handshake = handshake
