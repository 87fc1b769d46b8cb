"""gremio: the operations platform of Chile's sopaipilla cart guild.

This shared package holds what every part agrees on: settings, record schemas, topic
declarations, Kafka and PostgreSQL helpers, the consumer run loop, and the `gremio`
command line.
"""

__version__ = "0.1.0"
