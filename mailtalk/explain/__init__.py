"""`mailtalk explain`: the command and the view of an explanation (the matcher is
in mailtalk.knowledge)."""
