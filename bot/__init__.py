"""supportbot: decides what the customer-service bot says."""
