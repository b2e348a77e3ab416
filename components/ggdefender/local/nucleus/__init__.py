"""The offline nucleus: IPC wire protocol and server, operations, authorization, components and their lifecycle."""
