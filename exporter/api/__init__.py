"""The DialNexa API side: the client, its rate-limit budget and the campaign records."""
