"""The station: a line's controls (a PLC over Modbus TCP, an MES over MQTT) talking to warm models.

``handshake`` is the one state machine every protocol shows (plain Python, a clock passed in);
``signals`` names its signals and fixes their Modbus addresses and the error codes; ``config``
reads the station file; each protocol is a thin adapter beside them (``modbus``).
"""
