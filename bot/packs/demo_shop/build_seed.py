"""Write seed_conversations.jsonl for the demo pack: short multi-turn chats in the shop's voice.

Run `python bot/packs/demo_shop/build_seed.py`; the fixed seed makes the output identical each run.
"""

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

SEED = 20241123
OUTPUT = Path(__file__).with_name("seed_conversations.jsonl")

Message = dict[str, str]


@dataclass(frozen=True)
class Topic:
    """One thing a customer asks, in several phrasings, and the replies that answer it."""

    users: Sequence[str]
    replies: Sequence[str]


@dataclass(frozen=True)
class Collect:
    """A question about one order: the bot asks for the order number before it answers."""

    openers: Sequence[str]
    openers_with_number: Sequence[str]  # `{order}` is filled in, so no question is needed
    asks: Sequence[str]
    answers: Sequence[str]  # `{ref}` becomes "order LL-…" or "the order under …@example.com"
    followups: Sequence[Topic]


# --- Shared turns -----------------------------------------------------------------------------

THANKS = [
    "thanks!",
    "Thank you, that helps.",
    "ok great, thanks",
    "perfect, thank you so much",
    "cool, thx",
    "Got it. Thanks for your help!",
    "ok, that's all I needed",
    "thanks a lot",
    "Alright, thank you.",
    "great, appreciate it",
    "ty!",
    "That's clear, thanks.",
    "ok cheers",
    "Thanks, have a nice day!",
    "thank you!! super helpful",
    "Okay, understood. Thanks.",
]
CLOSINGS = [
    "You're welcome! Is there anything else I can help with?",
    "Happy to help. Have a great day!",
    "You're welcome! Feel free to come back any time.",
    "Glad I could help. Take care!",
    "My pleasure. Have a lovely day!",
    "Anytime! Let me know if anything else comes up.",
    "You're very welcome. Have a good one!",
]
HANDOFF_CLOSINGS = [
    "You're welcome. A teammate will be with you during support hours.",
    "Thank you for your patience. Our team will reply here as soon as they can.",
    "Of course. Someone from our support team will pick this up soon.",
]
ANYTHING_ELSE = [
    "You're welcome! Is there anything else I can help with?",
    "Glad that helped! Anything else I can do for you?",
    "My pleasure. Is there anything else you need today?",
]
BYES = [
    "no, that's all. bye!",
    "nope, all good. Bye",
    "That's everything, goodbye!",
    "no thanks, have a good day",
    "all sorted, bye",
    "Nothing else. Thanks again, bye!",
    "that's it for now, see ya",
]
FAREWELLS = [
    "Have a great day!",
    "Goodbye, and thanks for shopping with Lumen & Loom!",
    "Take care, and have a lovely day!",
    "Bye for now, and thanks for reaching out!",
]
FOLLOWUP_PREFIXES = ["Also, ", "And ", "One more thing: ", "Another question: ", "Ok, and ", "Thanks. "]
OFF_TOPIC_RETURNS = ["Ok, fair enough. ", "Alright. ", "Haha ok. ", "Fine. ", ""]
NAMES = [
    "jane.doe",
    "sam.lee",
    "alex.kim",
    "maria.g",
    "tom.baker",
    "priya.n",
    "chris_w",
    "lena.h",
    "d.okafor",
]

ORDER_GIVEN = [
    "It's {order}.",
    "{order}",
    "sure, {order}",
    "Order number is {order}",
    "here you go: {order}",
    "{lower}",
    "I think it's {order}",
    "ok it's {order}",
    "The number is {order}, thanks.",
    "{order} - I placed it last week",
    "#{order}",
    "Yes, it's {order}.",
]
NO_NUMBER = [
    "I don't have my order number",
    "not sure, I can't find it",
    "I don't know it, sorry",
    "where do I find that?",
    "hmm I deleted the email",
]
FIND_NUMBER = [
    "No problem. It's in your order confirmation e-mail and under Account > Orders. If you can't "
    "find it, the e-mail address you used for the order works too.",
    "That's okay. The order number is in your confirmation e-mail and under Account > Orders; the "
    "e-mail address you ordered with also works.",
]
EMAIL_GIVEN = [
    "It's {email}",
    "use {email}",
    "the order is under {email}",
    "I ordered with {email}",
]


# --- Intents that need an order number ----------------------------------------------------------

ORDER_STATUS = Collect(
    openers=[
        "where is my order?",
        "Hi, where's my package?",
        "my order hasn't arrived yet",
        "has my order shipped?",
        "Can you check the status of my order?",
        "I ordered a lamp last week and it's still not here",
        "whats the status of my order",
        "is my order on the way?",
        "I'd like an update on my recent order please.",
        "When will my order arrive?",
        "still waiting on my parcel...",
        "I placed an order on Sunday, any news?",
        "Can you tell me where my delivery is?",
        "order status please",
        "It's been a week, where is my stuff",
    ],
    openers_with_number=[
        "Where is order {order}?",
        "Can you check on {order} please, it hasn't arrived",
        "status of my order {order}?",
        "Has {order} shipped yet?",
    ],
    asks=[
        "I can help with that. What's your order number? It looks like LL-104233 and is in your confirmation e-mail.",
        "Sure! Could you share your order number? It starts with LL- and is in your order confirmation e-mail.",
        "Happy to check. What's the order number, please?",
        "Of course. Which order is it? Please send the order number, for example LL-104233.",
    ],
    answers=[
        "Thanks, I've noted {ref}. I can't see live tracking from here, so a teammate will check it "
        "and reply in this chat. The tracking link is also in your shipping e-mail and under "
        "Account > Orders.",
        "Thank you! I've passed {ref} to our support team to check the latest status. Orders "
        "usually leave our warehouse within 1 business day, and tracking can take up to 24 hours "
        "to show the first update.",
        "Got it, {ref}. I don't have access to live order details, but a teammate will look it up "
        "and get back to you here. Meanwhile you can follow the tracking link under Account > "
        "Orders.",
        "Thanks! I've noted {ref} for our team, who can see the live status and will reply here. "
        "Once a parcel ships, you get a shipping e-mail with a tracking link.",
    ],
    followups=[
        Topic(
            [
                "The tracking hasn't changed in days though.",
                "my tracking hasn't updated since Monday",
                "what if the tracking doesn't move?",
            ],
            [
                "If a US parcel shows no movement for 5 business days, we open a trace with the "
                "carrier. I've added that to your request so the teammate can check.",
                "Thanks for letting me know. When a US parcel shows no movement for 5 business days, "
                "we open a trace with the carrier, and the teammate will look into it.",
            ],
        ),
        Topic(
            [
                "It says delivered but I don't have it.",
                "tracking shows delivered but nothing's at my door",
                "The tracking says delivered?? there's no parcel",
            ],
            [
                "I'm sorry about that. When tracking says delivered but you can't find the parcel, we "
                "open a trace with the carrier; a teammate will follow up with you here.",
                "That's frustrating, sorry. We'll open a trace with the carrier for a parcel marked "
                "delivered that you can't find, and a teammate will keep you posted here.",
            ],
        ),
        Topic(
            ["Where can I find the tracking link?", "how do I track it myself?", "is there a tracking link?"],
            [
                "The tracking link is in the shipping e-mail we send when your parcel leaves the "
                "warehouse, and it's also under Account > Orders on our website.",
                "You'll find it in your shipping e-mail and under Account > Orders. Tracking can take up "
                "to 24 hours to show the first update.",
            ],
        ),
        Topic(
            [
                "I never got a shipping email.",
                "I didn't get any email with tracking",
                "no shipping confirmation in my inbox",
            ],
            [
                "The shipping e-mail goes out once the parcel leaves our warehouse, usually within 1 "
                "business day. Please check your spam folder too; the teammate will confirm whether it "
                "has shipped.",
                "Please check your spam folder first. The shipping e-mail is sent when the parcel leaves "
                "our warehouse, and the teammate checking your order will confirm where it is.",
            ],
        ),
        Topic(
            [
                "How long does it take once it's shipped?",
                "how many days after it ships?",
                "and once it ships, how long until it gets here?",
            ],
            [
                "Within the US, standard shipping takes 3 to 5 business days and express takes 1 to 2 "
                "business days after the order ships.",
                "Standard shipping takes 3 to 5 business days and express shipping 1 to 2 business "
                "days, counted from when the parcel ships.",
            ],
        ),
    ],
)

CANCEL_ORDER = Collect(
    openers=[
        "I want to cancel my order",
        "can you cancel my order please",
        "I ordered the wrong thing, can you cancel it?",
        "Is it too late to cancel?",
        "I changed my mind, please cancel my purchase.",
        "please cancel, I ordered twice by mistake",
        "I need to cancel an order I placed this morning",
        "how do I cancel my order",
        "cancel my order pls",
        "Can I still cancel? I ordered about an hour ago.",
        "Hi, I'd like to cancel a recent order.",
        "don't ship my order, I want to cancel",
    ],
    openers_with_number=[
        "Please cancel order {order}.",
        "cancel {order} pls",
        "I need {order} cancelled, I ordered the wrong size",
    ],
    asks=[
        "I can help with that. What's the number of the order you'd like to cancel?",
        "Sure. Could you send me the order number? It starts with LL-.",
        "Orders can be cancelled within 2 hours of being placed, as long as they haven't shipped. "
        "What's the order number?",
        "Of course. Which order is it? Please share the order number.",
    ],
    answers=[
        "Thanks, I've noted {ref}. Orders can be cancelled within 2 hours of being placed if they "
        "haven't shipped, and a teammate will confirm the cancellation here. Cancelled orders are "
        "refunded in full to the original payment method.",
        "Got it, {ref}. If it was placed less than 2 hours ago and hasn't shipped, our team will "
        "cancel it and refund you in full; they'll confirm in this chat.",
        "Thank you. I've passed {ref} to our team to cancel. Cancelling is possible within 2 hours "
        "of ordering and before shipping; if it's too late, you can return the items within 30 days "
        "of delivery instead.",
    ],
    followups=[
        Topic(
            [
                "What if it already shipped?",
                "and if it's too late?",
                "it might have shipped already, what then?",
            ],
            [
                "Once an order has shipped, it can't be cancelled, but you can return the items within "
                "30 days of delivery under our returns policy.",
                "Shipped orders can no longer be cancelled. In that case, you can return the items "
                "within 30 days of delivery.",
            ],
        ),
        Topic(
            [
                "When do I get my money back?",
                "how long for the refund after cancelling?",
                "will I get all my money back?",
            ],
            [
                "Cancelled orders are refunded in full to the original payment method, and refunds "
                "usually show up within 5 to 7 business days, depending on your bank.",
                "A cancelled order is refunded in full to your original payment method, and it usually "
                "shows up within 5 to 7 business days.",
            ],
        ),
        Topic(
            ["Can I add something to the order instead?", "actually could you just add a second lamp to it?"],
            [
                "We can't add items to an order that has already been placed, so please place a new "
                "order for the extra item.",
                "Sorry, items can't be added to a placed order. A new order is the way to go.",
            ],
        ),
        Topic(
            ["Can I cancel just one item instead?", "could you remove only the mugs from it?"],
            [
                "I can't confirm partial changes myself, so I've noted it for the teammate. If the "
                "order has already shipped, you can return just that item within 30 days of delivery.",
                "I've added that to your request for the teammate to check. If it's already shipped, "
                "that item can be returned within 30 days of delivery.",
            ],
        ),
    ],
)

CHANGE_ADDRESS = Collect(
    openers=[
        "I need to change my shipping address",
        "I typed the wrong zip code on my order",
        "Can I send my order to a different address?",
        "I moved, can you update the delivery address?",
        "wrong address on my order!",
        "please fix the apartment number on my order",
        "I made a typo in the street name",
        "can you ship it to my office instead?",
        "Hi, my order is going to my old address",
        "I forgot my unit number when I ordered",
    ],
    openers_with_number=[
        "Can you change the address on {order}?",
        "wrong street on order {order}, can it be fixed?",
    ],
    asks=[
        "Sure, I can note that. What's the order number, and what should the correct address be?",
        "I can help. Which order is it? Please send the order number.",
        "Address changes are possible within 2 hours of ordering, before the order ships. What's the order number?",
    ],
    answers=[
        "Thanks, I've noted {ref}. If it was placed within the last 2 hours and hasn't shipped, a "
        "teammate will update the address and confirm here. Please send the full correct address "
        "in this chat.",
        "Got it, {ref}. We can change the shipping address within 2 hours of ordering as long as "
        "it hasn't shipped; our team will confirm the change here. What's the correct address?",
        "Thank you. I've passed {ref} to our team. Addresses can be changed within 2 hours of "
        "ordering and before shipping, so please share the new address here.",
    ],
    followups=[
        Topic(
            [
                "It should be 42 Maple Street, Apt 3B, Springfield.",
                "new address: 18 Harbor Road, Unit 5",
                "The zip should be 43215, not 43251.",
                "Please send it to 901 Pine Ave, Suite 200.",
                "apt 12, not apt 21",
            ],
            [
                "Thank you, I've added that address to your request so the teammate can update it.",
                "Thanks, I've noted the corrected address for our team.",
                "Got it. The teammate will see the new address and confirm here.",
            ],
        ),
        Topic(
            ["What if it's already shipped?", "and if it has shipped already?", "too late if it's shipped?"],
            [
                "Once an order has shipped, we can no longer change its address or redirect it. The "
                "teammate can help you with the next steps.",
                "Shipped orders can't be changed or redirected, I'm afraid. The teammate checking your "
                "order will let you know.",
            ],
        ),
    ],
)

REFUND_STATUS = Collect(
    openers=[
        "where is my refund?",
        "I returned my order two weeks ago and still no refund",
        "When will I get my money back?",
        "Has my refund been processed?",
        "still haven't got my refund",
        "my refund isn't on my card yet",
        "I sent my return back ages ago, where's the money?",
        "I got the refund email but nothing in my bank",
        "refund status?",
        "Hello, I'm waiting on a refund for a return.",
    ],
    openers_with_number=[
        "Where is the refund for {order}?",
        "refund for {order} not received",
        "Can you check the refund on order {order}?",
    ],
    asks=[
        "Sorry for the wait. What's the order number the refund is for?",
        "I can help with that. Could you send me the order number?",
        "Sure, what's the order number of your return?",
    ],
    answers=[
        "Thanks, I've noted {ref}. Refunds are issued within 2 business days after the return "
        "reaches our warehouse and usually show up within 5 to 7 business days after that. A "
        "teammate will check this one and reply here.",
        "Thank you. I've passed {ref} to our team to check. Refunds go back to the original payment "
        "method and usually take 5 to 7 business days to appear once issued.",
        "Got it, {ref}. I can't see refund details from here, so a teammate will check it. You also "
        "get an e-mail as soon as the refund is issued.",
    ],
    followups=[
        Topic(
            [
                "Will I get the shipping cost back too?",
                "is shipping refunded?",
                "do I get the delivery fee back?",
            ],
            [
                "Original shipping fees aren't refunded, except when the item arrived damaged or we "
                "sent the wrong item.",
                "Only if the item arrived damaged or was the wrong item; otherwise original shipping "
                "fees aren't refunded.",
            ],
        ),
        Topic(
            [
                "Why is my refund less than what I paid?",
                "my refund was $5.95 short",
                "the refund amount is lower??",
            ],
            [
                "If you used our prepaid return label, $5.95 for return shipping is deducted from the "
                "refund, unless the item arrived damaged or was the wrong item.",
                "Our return label costs $5.95, which is deducted from the refund unless the item "
                "arrived damaged or was wrong. Original shipping fees aren't refunded either.",
            ],
        ),
        Topic(
            ["I paid with a gift card, how do I get refunded?", "what if I used a gift card?"],
            [
                "Gift card payments are refunded as a gift card balance.",
                "If you paid with a gift card, the refund goes back as a gift card balance.",
            ],
        ),
        Topic(
            ["It's been over a week since the refund email.", "the refund email came 8 business days ago"],
            [
                "Since it's been more than 7 business days since the refund e-mail, our team will check "
                "it with our payment provider. I've noted that for them.",
                "Thanks for the detail. After 7 business days we check with our payment provider, so "
                "I've flagged it for the teammate.",
            ],
        ),
    ],
)

DAMAGED_ITEM = Collect(
    openers=[
        "My item arrived broken.",
        "the lamp came with a cracked base",
        "I received the wrong item",
        "my package was damaged and the speaker won't turn on",
        "half the mugs are smashed",
        "you sent the wrong color",
        "something is missing from my order",
        "the glass shade was shattered when I opened the box",
        "the fabric has a tear in it",
        "There's a big dent in my new kettle.",
        "got a floor lamp instead of the desk lamp I ordered",
    ],
    openers_with_number=[
        "Order {order} arrived damaged.",
        "The bowl in {order} is chipped",
        "wrong item in my order {order}",
    ],
    asks=[
        "I'm so sorry about that! What's the order number, so our team can put it right?",
        "Sorry to hear that. Could you send me your order number?",
        "That's not the experience we want for you. What's the order number, please?",
    ],
    answers=[
        "Thanks, I've noted {ref}. Please e-mail a photo of the item and the packaging to "
        "support@lumenandloom.example.com within 7 days of delivery, and we'll send a free "
        "replacement or a full refund, whichever you prefer.",
        "Thank you. For {ref}, please send photos of the item and packaging to "
        "support@lumenandloom.example.com. We'll replace it for free or refund it in full, "
        "including shipping.",
        "Got it, {ref}. Just e-mail a photo of the item and the packaging to "
        "support@lumenandloom.example.com, and a teammate will arrange a free replacement or a full "
        "refund.",
    ],
    followups=[
        Topic(
            [
                "Do I need to send the broken one back?",
                "should I return the damaged item?",
                "what do I do with the broken one?",
            ],
            [
                "In most cases you don't need to send it back. If we do need it, we'll provide a free return label.",
                "Usually not. If we need the item back, we'll send you a free return label.",
            ],
        ),
        Topic(
            [
                "Can I get a refund instead of a replacement?",
                "I'd rather have a new one sent",
                "can I choose between refund and replacement?",
            ],
            [
                "Of course, it's your choice: a free replacement or a full refund, including shipping.",
                "Yes, whichever you prefer: we send a free replacement or give you a full refund, including shipping.",
            ],
        ),
        Topic(
            [
                "how long do I have to report damage?",
                "I got it 5 days ago, is that ok?",
                "is there a deadline to report this?",
            ],
            [
                "Damaged, wrong or missing items should be reported within 7 days of delivery.",
                "Please tell us within 7 days of delivery. Problems that appear later on electronics "
                "and lamps are covered by our 2-year warranty.",
            ],
        ),
        Topic(
            ["Will I get the shipping back too?", "does the refund include delivery?"],
            [
                "Yes, for damaged or wrong items the full refund includes shipping.",
                "It does: the refund for a damaged or wrong item includes shipping.",
            ],
        ),
    ],
)

WARRANTY_CLAIM = Collect(
    openers=[
        "my lamp stopped working after 3 months",
        "the speaker won't charge anymore",
        "my smart plug died after 6 months",
        "The lamp flickers even with a new bulb",
        "I want to make a warranty claim",
        "the charging cable quit working after a few weeks",
        "my power bank no longer holds a charge",
        "The switch on my desk lamp broke, it's about a year old.",
        "my alarm clock just stopped working",
        "is my broken speaker covered by the warranty?",
    ],
    openers_with_number=[
        "Warranty claim for order {order}, the lamp stopped working.",
        "The charger from {order} died after 4 months",
    ],
    asks=[
        "I'm sorry it stopped working. What's the order number, so we can start a warranty claim?",
        "That should be covered if it's a manufacturing defect. Could you share your order number?",
        "Let's get that sorted. What's the order number?",
    ],
    answers=[
        "Thanks, I've noted {ref}. Please e-mail support@lumenandloom.example.com with a short "
        "description and a photo or video of the problem, and we'll repair or replace it, or refund "
        "it if it's no longer available.",
        "Thank you. Electronics and lamps have a 2-year warranty from delivery that covers "
        "manufacturing defects. For {ref}, please send a photo or video of the problem to "
        "support@lumenandloom.example.com and a teammate will take it from there.",
        "Got it, {ref}. Our 2-year limited warranty covers manufacturing defects, so please e-mail "
        "a short description and a photo or video to support@lumenandloom.example.com.",
    ],
    followups=[
        Topic(
            ["How long is the warranty?", "how long does the warranty last?", "is it still under warranty?"],
            [
                "Electronics and lamps have a 2-year limited warranty from the date of delivery.",
                "The warranty lasts 2 years from the date of delivery for electronics and lamps.",
            ],
        ),
        Topic(
            [
                "What if I dropped it?",
                "does it cover water damage?",
                "it fell off the table, is that covered?",
            ],
            [
                "The warranty covers manufacturing defects only, so accidental damage, water damage, "
                "normal wear and misuse aren't covered.",
                "I'm sorry, accidental damage and water damage aren't covered; the warranty is for "
                "manufacturing defects.",
            ],
        ),
        Topic(
            ["Is my duvet covered by a warranty too?", "what about kitchenware?"],
            [
                "Textiles and kitchenware don't have a warranty, but they can be returned within 30 days of delivery.",
                "The warranty is for electronics and lamps only. Textiles and kitchenware can be "
                "returned within 30 days of delivery.",
            ],
        ),
        Topic(
            ["Do I need the receipt?", "I lost the receipt, is that a problem?"],
            [
                "No receipt is needed. Your order number, a short description, and a photo or video "
                "of the problem are enough.",
                "Not at all, no receipt is needed. The order number is enough.",
            ],
        ),
        Topic(
            ["Will you fix it or send a new one?", "do I get a replacement?"],
            [
                "We repair or replace the item, or refund it if it's no longer available.",
                "Depending on the problem, we repair or replace it; if it's no longer available, we refund it.",
            ],
        ),
        Topic(
            ["Can I buy an extended warranty?", "is there a longer warranty option?"],
            ["We don't sell extended warranties; electronics and lamps come with our 2-year limited warranty."],
        ),
    ],
)


# --- Intents answered from the policies -------------------------------------------------------

RETURN_ITEM = [
    Topic(
        [
            "How do I return an item?",
            "I want to return something",
            "how do I start a return?",
            "I'd like to send back a throw blanket",
            "what's your return policy?",
            "retrun policy?",
            "I need to return the mugs I bought",
            "Hi, can I return a lamp I don't like?",
        ],
        [
            "You can return most items within 30 days of delivery if they're unused and in their "
            "original packaging. Go to Account > Orders and choose Start a return, or e-mail "
            "support@lumenandloom.example.com with your order number.",
            "Sure! Returns are accepted within 30 days of delivery for unused items in their original "
            "packaging. Start one under Account > Orders, and we'll send you a prepaid return label.",
            "Of course. Unused items in their original packaging can be returned within 30 days of "
            "delivery; just choose Start a return under Account > Orders.",
        ],
    ),
    Topic(
        [
            "how many days do I have to return?",
            "How long is the return window?",
            "is there a time limit for returns?",
            "can I still return something I got 3 weeks ago?",
        ],
        [
            "You have 30 days from delivery to return an item.",
            "Returns are accepted within 30 days of delivery, as long as the item is unused and in its "
            "original packaging.",
        ],
    ),
    Topic(
        [
            "Is return shipping free?",
            "do I have to pay for the return label?",
            "who pays for return shipping?",
        ],
        [
            "We send a prepaid return label, and $5.95 for return shipping is deducted from your "
            "refund. It's free if the item arrived damaged or was the wrong item.",
            "The prepaid return label costs $5.95, taken from your refund, unless the item arrived "
            "damaged or was wrong.",
        ],
    ),
    Topic(
        [
            "Can I return pillows I've opened?",
            "I opened the bedding, can I still return it?",
            "can I send back a duvet I took out of the packaging?",
        ],
        [
            "For hygiene reasons, opened bedding and pillows can't be returned. Unopened ones can be "
            "returned within 30 days of delivery.",
            "I'm sorry, opened bedding and pillows can't be returned for hygiene reasons.",
        ],
    ),
    Topic(
        [
            "Can I return a gift card?",
            "are final sale items returnable?",
            "I bought it on final sale, can I return it?",
        ],
        [
            "Gift cards and final-sale items can't be returned. Most other items can be returned "
            "within 30 days of delivery.",
            "Unfortunately gift cards and final-sale items aren't returnable.",
        ],
    ),
    Topic(
        [
            "can I return something I've used?",
            "I used the lamp once, can I return it?",
            "What condition does it need to be in?",
        ],
        [
            "Returned items need to be unused and in their original packaging, with all parts and accessories.",
            "Items must be unused and in their original packaging with all parts. If an electronic "
            "item or lamp is faulty, our 2-year warranty covers manufacturing defects.",
        ],
    ),
    Topic(
        [
            "Do you do exchanges?",
            "Can I swap it for a different size?",
            "I want to exchange my duvet cover for a king",
        ],
        [
            "We don't offer direct exchanges. Please return the item within 30 days of delivery and "
            "place a new order for the one you want.",
            "Exchanges aren't possible directly, but you can return the item and place a new order.",
        ],
    ),
    Topic(
        ["I checked out as a guest, how do I return?", "I don't have an account, how do I send it back?"],
        [
            "No problem. E-mail support@lumenandloom.example.com with your order number, and we'll "
            "send you a prepaid return label.",
            "Guest orders are returned by e-mail: send your order number to "
            "support@lumenandloom.example.com and we'll take it from there.",
        ],
    ),
    Topic(
        [
            "I bought it 40 days ago, can I return it?",
            "it's been 5 weeks, is it too late to return?",
            "can I return something from two months ago?",
        ],
        [
            "I'm sorry, our return window is 30 days from delivery, so a return isn't possible after "
            "that. If it's an electronic item or lamp with a defect, the 2-year warranty may cover it.",
            "Returns are only possible within 30 days of delivery. For electronics and lamps, "
            "manufacturing defects are covered by our 2-year warranty.",
        ],
    ),
    Topic(
        [
            "When will I get my refund?",
            "how long until I get my money back after returning?",
            "how fast is the refund?",
        ],
        [
            "Once your return reaches our warehouse, we issue the refund within 2 business days. It "
            "usually shows up on your original payment method within 5 to 7 business days.",
            "We issue refunds within 2 business days of receiving the return, and the money usually "
            "appears within 5 to 7 business days.",
        ],
    ),
]

SHIPPING_OPTIONS = [
    Topic(
        [
            "What shipping options do you have?",
            "shipping options?",
            "standard vs express delivery?",
            "what are my delivery options",
            "How can I get my order shipped?",
        ],
        [
            "Within the US we offer standard shipping, which takes 3 to 5 business days, and express "
            "shipping, which takes 1 to 2 business days.",
            "There are two options in the US: standard shipping in 3 to 5 business days for $5.95, "
            "free on orders over $50, and express shipping in 1 to 2 business days for $14.95.",
        ],
    ),
    Topic(
        [
            "How long does delivery take?",
            "delivery times?",
            "How many business days is standard shipping?",
            "how long will shipping take to Texas?",
            "how long to get to Florida?",
        ],
        [
            "Standard shipping takes 3 to 5 business days and express takes 1 to 2 business days within the US.",
            "Anywhere in the US, standard shipping takes 3 to 5 business days. Express is faster at 1 "
            "to 2 business days.",
        ],
    ),
    Topic(
        [
            "Do you offer express shipping?",
            "is there a faster option?",
            "I need it fast, what can I do?",
            "i need it asap",
        ],
        [
            "Express shipping takes 1 to 2 business days and costs $14.95, and orders placed before 2 "
            "pm Eastern Time on a business day ship the same day.",
            "Express shipping is the fastest option: 1 to 2 business days for $14.95.",
        ],
    ),
    Topic(
        [
            "If I order today when will it ship?",
            "what's the cutoff for same-day dispatch?",
            "when will it ship if I buy tonight?",
            "does it ship the same day?",
        ],
        [
            "Orders placed before 2 pm Eastern Time on a business day leave our warehouse the same "
            "day; later orders ship the next business day.",
            "If you order before 2 pm Eastern Time on a business day, it ships the same day. After "
            "that, it ships the next business day.",
        ],
    ),
    Topic(
        ["Do you have same-day delivery?", "can I get it tomorrow?", "next day delivery available?"],
        [
            "We don't offer same-day delivery. The fastest option is express shipping, which takes 1 "
            "to 2 business days.",
            "Same-day delivery isn't available, but express shipping arrives in 1 to 2 business days.",
        ],
    ),
    Topic(
        ["Can I pick up my order in store?", "is there local pickup?", "can I collect it myself?"],
        [
            "We only sell online and have no physical stores, so pickup isn't available. Every order "
            "ships from our warehouse in Columbus, Ohio.",
            "Sorry, we don't offer pickup because we have no physical stores.",
        ],
    ),
    Topic(
        ["Do you ship to PO boxes?", "can express go to a P.O. box?", "I only have a PO box, is that ok?"],
        [
            "Yes, P.O. boxes can receive standard shipping. Express shipping can't be sent to P.O. boxes.",
            "P.O. boxes are fine with standard shipping, but express can't go to a P.O. box.",
        ],
    ),
    Topic(
        ["Where do you ship from?", "where is your warehouse?"],
        ["All orders ship from our warehouse in Columbus, Ohio."],
    ),
]

SHIPPING_COST = [
    Topic(
        [
            "How much is shipping?",
            "what does delivery cost?",
            "shipping fees?",
            "how much is standard shipping?",
            "How much is postage?",
        ],
        [
            "Standard shipping within the US costs $5.95 and is free on orders over $50. Express "
            "shipping costs $14.95.",
            "In the US, standard shipping is $5.95, or free on orders over $50, and express is $14.95.",
        ],
    ),
    Topic(
        [
            "Do you have free shipping?",
            "what's the minimum for free delivery?",
            "is shipping free over a certain amount?",
            "free shipping threshold?",
        ],
        [
            "Yes! Standard shipping is free on US orders over $50.",
            "Standard shipping is free on US orders over $50; below that it's $5.95.",
        ],
    ),
    Topic(
        [
            "My cart is $45, do I pay shipping?",
            "is there a charge on orders under 50 dollars?",
            "I'm only buying one mug, do I pay shipping?",
        ],
        [
            "Orders of $50 or less pay $5.95 for standard shipping; it becomes free once your order is over $50.",
            "Yes, standard shipping is $5.95 until your order is over $50, and then it's free.",
        ],
    ),
    Topic(
        ["How much is express?", "cost of express shipping?", "does free shipping apply to express?"],
        [
            "Express shipping costs $14.95 on any order; free shipping applies to standard shipping only.",
            "Express is $14.95 regardless of the order total. Free shipping is for standard shipping "
            "on orders over $50.",
        ],
    ),
    Topic(
        ["Do I pay shipping per item or per order?", "if I buy 3 things do I pay shipping 3 times?"],
        [
            "Shipping is charged once per order, not per item: $5.95 for standard, free over $50, or "
            "$14.95 for express.",
            "Just once per order, no matter how many items are in it.",
        ],
    ),
    Topic(
        ["Why was I charged $5.95 for shipping?", "why did I pay shipping?"],
        [
            "Standard shipping costs $5.95 on orders of $50 or less. Orders over $50 get free standard shipping.",
            "Standard shipping is $5.95 unless the order is over $50, when it becomes free.",
        ],
    ),
]

INTERNATIONAL_SHIPPING = [
    Topic(
        [
            "Do you ship internationally?",
            "what countries do you ship to?",
            "Do you ship outside the US?",
            "international shipping?",
        ],
        [
            "Besides the US, we ship to Canada, the United Kingdom and all European Union countries.",
            "We ship within the US and to Canada, the United Kingdom and all European Union countries.",
        ],
    ),
    Topic(
        [
            "Do you ship to Canada?",
            "Can I order from Germany?",
            "I live in Ireland, can I buy from you?",
            "do you deliver to the UK?",
            "ship to vancouver?",
            "can you send it to Spain?",
        ],
        [
            "Yes, we ship there! International shipping is a flat $19.95 per order and takes 7 to 14 business days.",
            "We do. International orders cost a flat $19.95 to ship and arrive in 7 to 14 business days.",
        ],
    ),
    Topic(
        [
            "Do you ship to Australia?",
            "can I order from India?",
            "shipping to Mexico?",
            "Do you ship to Switzerland?",
            "do you deliver to Japan?",
        ],
        [
            "I'm sorry, we don't ship there yet. Outside the US we currently ship only to Canada, the "
            "United Kingdom and European Union countries.",
            "Unfortunately not yet. We ship to the US, Canada, the United Kingdom and European Union countries only.",
        ],
    ),
    Topic(
        [
            "How much is shipping to France?",
            "what does international shipping cost?",
            "Is free shipping available for international orders?",
        ],
        [
            "International shipping is a flat $19.95 per order. Free shipping applies only to US orders.",
            "It's a flat $19.95 per order; free shipping is for US orders only.",
        ],
    ),
    Topic(
        [
            "Will I have to pay customs fees?",
            "are import taxes included?",
            "Do I pay VAT on delivery?",
            "duties to canada?",
        ],
        [
            "Customs duties and import taxes aren't included in our prices; they're paid by the customer on delivery.",
            "Customs duties and import taxes are paid by the customer on delivery, since they aren't "
            "included in our prices.",
        ],
    ),
    Topic(
        [
            "How long does delivery to Toronto take?",
            "international delivery time?",
            "how long to the UK?",
            "I'm in London, how long will it take?",
        ],
        [
            "International orders take 7 to 14 business days, and you get a tracking link just like with US orders.",
            "Delivery takes 7 to 14 business days, with a tracking link included.",
        ],
    ),
    Topic(
        ["Do you charge in euros?", "what currency are prices in?", "will I pay in pounds?"],
        [
            "All prices are charged in US dollars, so your bank may add a currency conversion fee.",
            "Prices are always in US dollars; your bank may add a currency conversion fee.",
        ],
    ),
    Topic(
        ["Can I use a freight forwarder?", "can I ship to a forwarding address?"],
        ["Sorry, we can't ship to freight forwarders."],
    ),
]

PAYMENT_METHODS = [
    Topic(
        ["What payment methods do you accept?", "payment options?", "how can I pay?", "what cards do u take"],
        [
            "We accept Visa, Mastercard, American Express, Discover, PayPal, Apple Pay, Google Pay and "
            "Lumen & Loom gift cards.",
            "You can pay with Visa, Mastercard, American Express, Discover, PayPal, Apple Pay, Google "
            "Pay or a Lumen & Loom gift card.",
        ],
    ),
    Topic(
        ["Can I pay with PayPal?", "Do you take Apple Pay?", "Google Pay supported?"],
        [
            "Yes, we accept PayPal, Apple Pay and Google Pay, as well as Visa, Mastercard, American "
            "Express and Discover.",
            "Yes! PayPal, Apple Pay and Google Pay all work at checkout.",
        ],
    ),
    Topic(
        ["Do you accept Amex?", "Can I use my Discover card?", "is Mastercard ok?"],
        [
            "Yes, we accept American Express and Discover, as well as Visa and Mastercard.",
            "Yes, Visa, Mastercard, American Express and Discover are all accepted.",
        ],
    ),
    Topic(
        [
            "Can I pay by bank transfer?",
            "Is cash on delivery available?",
            "Do you accept Bitcoin?",
            "do you take checks?",
        ],
        [
            "Sorry, we don't accept cash on delivery, checks, bank transfers or cryptocurrency. You can "
            "pay by card, PayPal, Apple Pay, Google Pay or gift card.",
            "I'm afraid not. We accept Visa, Mastercard, American Express, Discover, PayPal, Apple Pay, "
            "Google Pay and Lumen & Loom gift cards.",
        ],
    ),
    Topic(
        ["Can I pay in installments?", "do you have Klarna?", "is there a buy now pay later option?"],
        [
            "We don't offer payment plans, so the full amount is charged when you place the order.",
            "Sorry, payment plans aren't available; your card is charged when you place the order.",
        ],
    ),
    Topic(
        ["When will my card be charged?", "do you charge when it ships or when I order?"],
        ["Your card is charged when you place the order."],
    ),
    Topic(
        ["What currency do you charge in?", "are prices in dollars?"],
        ["All prices are in US dollars."],
    ),
    Topic(
        ["Do you store my card number?", "is it safe to pay on your site?"],
        [
            "Card details are handled by our payment provider, and we never store full card numbers.",
            "Payments are handled by our payment provider, and we never store full card numbers.",
        ],
    ),
    Topic(
        ["Can I use a gift card?", "can I pay with my gift card balance?"],
        ["Yes, Lumen & Loom gift cards can be used at checkout."],
    ),
]

PAYMENT_FAILED = [
    Topic(
        [
            "My card was declined.",
            "card declined at checkout",
            "payment failed, why?",
            "my card got rejected but it works elsewhere",
            "it keeps saying payment unsuccessful",
            "checkout keeps failing",
        ],
        [
            "Sorry about that! Please check that the billing address matches the one your bank has, "
            "the card hasn't expired, and the security code is correct, then try again or use another "
            "payment method.",
            "That's annoying, sorry. Usually it's a billing address that doesn't match your bank's, an "
            "expired card, or a wrong security code. If all look right, try again or use another "
            "method.",
        ],
    ),
    Topic(
        ["Could my bank be blocking it?", "my bank blocked the payment", "the bank says they stopped it"],
        [
            "Some banks block online purchases until you approve them with the bank. Once it's "
            "approved, please try again.",
            "That can happen: some banks block online purchases until you approve them. After "
            "that, the payment should go through.",
        ],
    ),
    Topic(
        [
            "I was charged twice for one order",
            "the order failed but money left my account",
            "I got charged but there's no order",
        ],
        [
            "I'm sorry about that. I can't see payment details from here, so I've flagged this for a "
            "teammate, who will check it with our payment provider and reply here.",
            "Sorry for the worry. A teammate will check this with our payment provider and get back to "
            "you in this chat.",
        ],
    ),
    Topic(
        ["PayPal didn't go through", "Apple Pay isn't working at checkout", "Google Pay keeps failing"],
        [
            "Sorry for the trouble. You can try again or pay with another method, such as Visa, "
            "Mastercard or PayPal. If it still fails, I can connect you with a teammate."
        ],
    ),
    Topic(
        ["It says billing address doesn't match", "error: billing address mismatch"],
        [
            "The billing address has to match the one your bank has for the card. Please correct it at "
            "checkout and try again."
        ],
    ),
    Topic(
        ["Can I just give you my card number here?", "should I send you my card details?"],
        ["Please don't share your card number here. We never ask for your full card number in chat or e-mail."],
    ),
    Topic(
        ["Can I use my Canadian card?", "does a UK card work?"],
        [
            "Yes, and prices are in US dollars, so your bank may add a currency conversion fee. If the "
            "card is declined, your bank may need to approve the online purchase."
        ],
    ),
]

ACCOUNT_LOGIN = [
    Topic(
        [
            "I forgot my password",
            "How do I reset my password?",
            "can't log in",
            "login not working",
            "pasword reset plz",
            "I can't sign in to my account",
        ],
        [
            "Use the Forgot password link on the sign-in page. The reset e-mail arrives within a few "
            "minutes, and its link is valid for 30 minutes.",
            "No problem! Click Forgot password on the sign-in page and we'll e-mail you a reset link, "
            "valid for 30 minutes.",
        ],
    ),
    Topic(
        ["The reset email never arrived", "haven't got the reset link", "no reset email in my inbox"],
        [
            "Please check your spam folder. If it's not there, request a new one with Forgot password, "
            "using the e-mail address on your account.",
            "It can land in spam, so please check there first. You can also request a new reset e-mail "
            "from the sign-in page.",
        ],
    ),
    Topic(
        ["The reset link says it expired", "the link doesn't work anymore"],
        [
            "Reset links are valid for 30 minutes, so please request a new one with the Forgot "
            "password link on the sign-in page."
        ],
    ),
    Topic(
        ["My account is locked", "locked out after too many attempts", "it says account locked??"],
        [
            "After 5 wrong passwords the account is locked for 15 minutes for security. Please wait "
            "15 minutes and try again, or reset your password.",
            "For security, 5 wrong passwords lock the account for 15 minutes. After that you can sign "
            "in again or use Forgot password.",
        ],
    ),
    Topic(
        [
            "How do I change the email on my account?",
            "how do I change my password?",
            "Where do I update my saved addresses?",
        ],
        [
            "You can change your e-mail address, password and saved addresses under Account > Settings.",
            "All of that is under Account > Settings: e-mail address, password and saved addresses.",
        ],
    ),
    Topic(
        ["Do I need an account to order?", "can I check out as a guest?", "Can I order without signing up?"],
        [
            "You can shop as a guest without an account. A free account lets you see your orders, save "
            "addresses and start returns.",
            "Guest checkout works fine. An account is free and lets you see orders and start returns.",
        ],
    ),
    Topic(
        ["How do I create an account?", "how do I sign up?"],
        [
            "You can create a free account on our website. It lets you see your orders, save addresses "
            "and start returns."
        ],
    ),
]

DELETE_ACCOUNT = [
    Topic(
        [
            "How do I delete my account?",
            "please delete my account",
            "close my account",
            "I don't want an account with you anymore",
            "delete acount",
            "Remove my account please",
        ],
        [
            "You can choose Delete account under Account > Settings, or e-mail us from the address on "
            "the account. Deletion is completed within 30 days.",
            "Sure. Go to Account > Settings and choose Delete account, or e-mail us from the address on "
            "the account; we complete deletion within 30 days.",
        ],
    ),
    Topic(
        ["Will you delete all my data?", "do you keep my order history?", "what happens to my data after?"],
        [
            "We delete your account data, but order and payment records are kept for 7 years because "
            "tax law requires it.",
            "Your account is deleted, but tax law requires us to keep order and payment records for 7 years.",
        ],
    ),
    Topic(
        ["How long does deletion take?", "when will it be gone?"],
        ["Account deletion is completed within 30 days."],
    ),
    Topic(
        ["This is a GDPR deletion request.", "right to be forgotten please", "erase my personal data"],
        [
            "You can send deletion requests to privacy@lumenandloom.example.com, and we complete them "
            "within 30 days. Order and payment records are kept for 7 years because tax law requires "
            "it.",
            "Please e-mail privacy@lumenandloom.example.com; we complete deletion requests within 30 days.",
        ],
    ),
]

PRIVACY_DATA = [
    Topic(
        [
            "Do you sell my data?",
            "is my data shared with third parties?",
            "What do you do with my personal data?",
            "Do you use my data for advertising?",
        ],
        [
            "We never sell your data. We use it only to process orders, provide support and, if you "
            "opt in, send marketing e-mails.",
            "Your data is used only for orders, support and, if you opted in, marketing e-mails. We never sell it.",
        ],
    ),
    Topic(
        [
            "How do I unsubscribe from your emails?",
            "stop sending me newsletters",
            "unsubscribe me",
            "remove me from your mailing list",
        ],
        [
            "Use the unsubscribe link at the bottom of any newsletter. You'll still get order and shipping e-mails.",
            "You can unsubscribe with the link at the bottom of any newsletter; order and shipping "
            "e-mails are still sent.",
        ],
    ),
    Topic(
        ["Can I get a copy of my data?", "data access request", "Can I see what data you have on me?"],
        [
            "Yes, e-mail privacy@lumenandloom.example.com, and we'll complete your request within 30 days.",
            "Of course. Send your request to privacy@lumenandloom.example.com; we complete these "
            "requests within 30 days.",
        ],
    ),
    Topic(
        ["How long do you keep my information?", "do you keep my data forever?"],
        [
            "Order and payment records are kept for 7 years because tax law requires it. You can ask "
            "for other data to be deleted at privacy@lumenandloom.example.com."
        ],
    ),
    Topic(
        ["Do you store my credit card number?", "how is my payment info protected?"],
        ["Card details are handled by our payment provider, and we never store full card numbers."],
    ),
    Topic(
        ["Will I still get shipping emails if I unsubscribe?", "will I miss my order updates?"],
        ["Order and shipping e-mails are still sent after you unsubscribe from marketing."],
    ),
]

PRODUCT_AVAILABILITY = [
    Topic(
        [
            "Is the Aria table lamp in stock?",
            "is this product still available?",
            "do you have the ceramic mugs in green?",
            "Is the queen size quilt available?",
        ],
        [
            "I can't check live stock from here, but the product page always shows it: anything marked "
            "In stock is ready to ship from our warehouse.",
            "The product page shows the current stock. If it says In stock, it's ready to ship; if "
            "it's sold out, you'll see a Notify me button.",
        ],
    ),
    Topic(
        [
            "When will the linen duvet be back in stock?",
            "will you restock the walnut desk lamp?",
            "it says sold out, will it come back?",
            "When are you getting more throw blankets?",
        ],
        [
            "Restocks usually take 2 to 4 weeks, but we can't promise a date. Use the Notify me button "
            "on the product page and we'll e-mail you when it's back.",
            "Sold-out items usually come back within 2 to 4 weeks. The Notify me button on the product "
            "page will let you know as soon as it's back.",
        ],
    ),
    Topic(
        ["Can you reserve one for me?", "could you hold an item for me?"],
        [
            "Sorry, we can't reserve items. The Notify me button on the product page will e-mail you "
            "as soon as it's back in stock."
        ],
    ),
    Topic(
        ["Can I pre-order it?", "Do you make custom sizes?", "can you make it in a custom color?"],
        ["We don't take pre-orders or custom orders.", "Sorry, we don't take pre-orders or custom orders."],
    ),
    Topic(
        ["Do you have a physical store?", "can I see it in person?", "do you have a showroom?"],
        [
            "We only sell online and have no physical stores or showrooms. Sizes, materials and "
            "compatibility details are listed on each product page."
        ],
    ),
    Topic(
        [
            "What size is the Harbor throw?",
            "Is this charger compatible with iPhone?",
            "what material is the Nova lamp shade?",
        ],
        [
            "Sizes, materials and compatibility details are listed on each product page. If something "
            "isn't clear there, I can pass your question to a teammate."
        ],
    ),
]

DISCOUNT_CODE = [
    Topic(
        [
            "My discount code isn't working",
            "the code says invalid",
            "coupon won't apply",
            "i have a promo code from instagram but it wont work",
        ],
        [
            "Please check the code's expiry date and minimum order amount, and make sure it's typed "
            "exactly as shown. Codes also can't be used on gift cards.",
            "Sorry about that! Check that the code hasn't expired, that your order meets its minimum "
            "amount, and that it's typed exactly as shown.",
        ],
    ),
    Topic(
        [
            "I forgot to use my code, can you add it now?",
            "can you apply my discount to an order I already placed?",
        ],
        ["I'm sorry, codes can't be added after an order is placed; they need to be entered at checkout."],
    ),
    Topic(
        ["Can I use two codes?", "can I stack coupons?"],
        ["Only one discount code can be used per order."],
    ),
    Topic(
        ["Do you have a first-order discount?", "any promo codes?", "how do I get 10% off?"],
        [
            "Sign up for our newsletter to get 10% off your first order.",
            "Our newsletter gives you 10% off your first order when you sign up.",
        ],
    ),
    Topic(
        ["My promo code expired, can you extend it?", "can you reactivate an old code?"],
        ["I'm sorry, expired codes can't be reactivated."],
    ),
    Topic(
        ["Do you price match?", "the price dropped after I bought it, can I get the difference?"],
        ["We don't offer price matching or price adjustments after purchase."],
    ),
    Topic(
        ["Can I use my code on sale items?", "does the newsletter code work with sale prices?"],
        ["Codes can't be combined with sale prices unless the code says so."],
    ),
]


# --- Small talk, out of scope and handoffs ----------------------------------------------------

GREETING = Topic(
    [
        "hi",
        "Hello!",
        "hey there",
        "good morning",
        "hi, can you help me?",
        "Hey, I have a question",
        "hello, is this Lumen & Loom support?",
        "hiya",
        "Good evening!",
        "hi there",
        "helloo",
    ],
    [
        "Hi! I'm the Lumen & Loom assistant. How can I help you today?",
        "Hello! What can I help you with today?",
        "Hi there! I can help with orders, shipping, returns, refunds and your account. What do you need?",
        "Hi! Thanks for reaching out to Lumen & Loom. How can I help?",
    ],
)

OUT_OF_SCOPE = [
    Topic(
        [
            "What's the weather like tomorrow?",
            "is it going to rain today?",
            "how hot will it be this weekend?",
        ],
        [
            "I'm only able to help with Lumen & Loom orders, shipping, returns and accounts, so I can't "
            "check the weather. Is there anything about your order I can help with?",
            "Sorry, I can't help with the weather. I'm here for questions about Lumen & Loom orders, "
            "shipping, returns and accounts.",
        ],
    ),
    Topic(
        ["tell me a joke", "say something funny", "sing me a song"],
        [
            "I'll leave that to the professionals! I'm here to help with your Lumen & Loom orders, "
            "shipping, returns and account. What can I do for you?",
            "That's not something I can do, I'm afraid. I can help with orders, shipping, returns and your account.",
        ],
    ),
    Topic(
        ["Can you help me with my math homework?", "write my essay on World War 2", "What's 17 times 23?"],
        [
            "Sorry, I can't help with homework. I can only answer questions about Lumen & Loom orders, "
            "shipping, returns and accounts."
        ],
    ),
    Topic(
        [
            "my Walmart order is late, can you check it?",
            "How do I return something I bought on Amazon?",
            "Is IKEA cheaper than you?",
        ],
        [
            "I'm afraid I can only help with orders placed with Lumen & Loom. For another store, please "
            "contact that store directly.",
            "I can only help with Lumen & Loom orders and policies, so I can't answer for other companies.",
        ],
    ),
    Topic(
        [
            "What's the capital of Australia?",
            "How tall is Mount Everest?",
            "who won the game last night?",
            "Who is the president of France?",
        ],
        [
            "That's outside what I can help with; I'm the Lumen & Loom support assistant. If you have a "
            "question about an order, shipping or returns, I'm happy to help.",
            "I can't answer general questions, sorry. I'm here for Lumen & Loom orders, shipping, "
            "returns and accounts.",
        ],
    ),
    Topic(
        [
            "What stocks should I buy?",
            "Can you diagnose my headache?",
            "How do I fix my car's check engine light?",
        ],
        [
            "I'm not able to give that kind of advice. I can only help with Lumen & Loom orders, "
            "shipping, returns and accounts."
        ],
    ),
    Topic(
        ["Are you ChatGPT?", "what are you?", "are you an AI?"],
        [
            "I'm the Lumen & Loom virtual assistant. I can help with orders, shipping, returns and your "
            "account, and I can connect you with a person whenever you like."
        ],
    ),
    Topic(
        [
            "do you like music?",
            "i'm bored, let's chat",
            "what's your favorite color?",
            "what's the meaning of life",
        ],
        [
            "I'm just a support assistant, so I'll stick to shop questions! Is there anything about an "
            "order, shipping or returns I can help with?"
        ],
    ),
    Topic(
        [
            "give me a recipe for banana bread",
            "write me a poem about cats",
            "Can you book me a flight to Paris?",
        ],
        [
            "That's not something I can help with, I'm afraid. I'm here for questions about Lumen & "
            "Loom orders, shipping, returns and accounts."
        ],
    ),
]

HANDOFF_TIMING = Topic(
    [
        "How long will that take?",
        "when will someone get back to me?",
        "how long do I have to wait?",
        "What are your support hours?",
    ],
    [
        "A teammate replies during support hours, Monday to Friday, 9 am to 6 pm Eastern Time. You can "
        "also e-mail support@lumenandloom.example.com.",
        "Our support team works Monday to Friday, 9 am to 6 pm Eastern Time, and will reply here as soon as they can.",
    ],
)
HANDOFF_DETAILS = Topic(
    [
        "It's about order {order}, the lamp arrived broken and nobody answered my email.",
        "It's about a refund for order {order}.",
        "order {order} never arrived and I need it",
        "It's {order}. I was charged twice.",
    ],
    [
        "Thank you for the details. I've added them to the conversation so the teammate can see everything.",
        "Thanks, I've added that to the conversation so the teammate can pick it up right away.",
    ],
)
HANDOFF_PHONE = Topic(
    ["Do you have a phone number I can call?", "can I call you instead?", "can someone phone me?"],
    [
        "We offer support by chat and e-mail only, with no phone line. A teammate will reply here, or "
        "you can e-mail support@lumenandloom.example.com.",
        "Sorry, we don't have a phone line; support is by chat and e-mail. A teammate will reply right here.",
    ],
)

COMPLAINT = Topic(
    [
        "I'm really unhappy with your service.",
        "This is unacceptable, I've been waiting a month.",
        "I want to file a complaint.",
        "I've emailed three times and nobody has replied!",
        "I'm so frustrated, this is the third time something went wrong",
        "terrible experience, never ordering again",
        "I want to make a formal complaint about my last order",
        "Nobody is helping me, this is ridiculous",
        "I'm very disappointed with the quality of your products",
        "You keep messing up my orders and I'm fed up.",
    ],
    [
        "I'm really sorry about this. I'm passing your conversation to a member of our support team, "
        "and a teammate will reply here during support hours, Monday to Friday, 9 am to 6 pm Eastern "
        "Time.",
        "I'm sorry we let you down. I've handed this conversation to our support team so a teammate "
        "can look into it personally; they'll reply here during support hours.",
        "I understand your frustration, and I'm sorry. A member of our support team will take over "
        "this conversation and reply here as soon as possible.",
    ],
)
COMPLAINT_BOT = Topic(
    ["you're a bot, this is useless", "I don't want another automated answer"],
    ["I understand. That's why I've passed this to a person on our support team, who will reply here."],
)
HUMAN_AGENT = Topic(
    [
        "Can I talk to a human?",
        "I want to speak to a real person",
        "agent please",
        "transfer me to a live agent",
        "human",
        "representative",
        "I don't want to talk to a bot",
        "Let me speak to a manager",
        "connect me to customer service please",
        "real person pls",
        "Is there someone I can talk to?",
    ],
    [
        "Of course. I'm connecting you with a member of our support team, who will reply here during "
        "support hours, Monday to Friday, 9 am to 6 pm Eastern Time.",
        "Sure! I've passed this conversation to our support team. A teammate will reply in this chat "
        "during support hours.",
        "No problem, a member of our team will take over this chat. If you like, tell me briefly what "
        "it's about so they can get started faster.",
    ],
)


# --- Assembling conversations ---------------------------------------------------------------


def as_followup(text: str, rng: random.Random, prefixes: Sequence[str] = FOLLOWUP_PREFIXES) -> str:
    """Sometimes lead in the way people do when they ask a second question."""
    if rng.random() > 0.35:
        return text
    prefix = rng.choice(prefixes)
    # Only a lead-in that runs into the sentence ("Also, ...") lowers its first word, and never
    # "I", "PayPal" or "LL-...".
    runs_on = prefix in ("Also, ", "And ", "Ok, and ")
    keep = text[:2] in ("I ", "I'") or (len(text) > 1 and text[1].isupper())
    return prefix + (text[0].lower() + text[1:] if runs_on and not keep else text)


class Builder:
    """Draws conversations from the scripts above with one seeded random generator."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def order(self) -> str:
        return f"LL-{self.rng.randint(100000, 129999)}"

    def fill(self, text: str, order: str) -> str:
        return text.replace("{order}", order).replace("{lower}", order.lower())

    def pair(self, topic: Topic, *, followup: bool = False, order: str = "") -> list[Message]:
        user = self.fill(self.rng.choice(topic.users), order or self.order())
        if followup:
            user = as_followup(user, self.rng)
        return [
            {"role": "user", "content": user},
            {"role": "assistant", "content": self.rng.choice(topic.replies)},
        ]

    def closing(self, replies: Sequence[str] = CLOSINGS) -> list[Message]:
        return [
            {"role": "user", "content": self.rng.choice(THANKS)},
            {"role": "assistant", "content": self.rng.choice(replies)},
        ]

    def answer(self, topics: Sequence[Topic], *, max_followups: int = 2, close: float = 0.5) -> list[Message]:
        count = self.rng.choices([0, 1, 2], weights=[30, 45, 25])[0]
        chosen = self.rng.sample(list(topics), k=min(1 + min(count, max_followups), len(topics)))
        messages = self.pair(chosen[0])
        for topic in chosen[1:]:
            messages += self.pair(topic, followup=True)
        if self.rng.random() < close:
            messages += self.closing()
        return messages

    def collect(self, script: Collect, *, max_followups: int = 1, close: float = 0.35) -> list[Message]:
        rng = self.rng
        order = self.order()
        ref = f"order {order}"
        if rng.random() < 0.2:
            messages = [{"role": "user", "content": self.fill(rng.choice(script.openers_with_number), order)}]
        else:
            messages = [
                {"role": "user", "content": rng.choice(script.openers)},
                {"role": "assistant", "content": rng.choice(script.asks)},
            ]
            if rng.random() < 0.15:
                email = f"{rng.choice(NAMES)}@example.com"
                ref = f"the order under {email}"
                messages += [
                    {"role": "user", "content": rng.choice(NO_NUMBER)},
                    {"role": "assistant", "content": rng.choice(FIND_NUMBER)},
                    {"role": "user", "content": rng.choice(EMAIL_GIVEN).replace("{email}", email)},
                ]
            else:
                messages.append({"role": "user", "content": self.fill(rng.choice(ORDER_GIVEN), order)})
        messages.append({"role": "assistant", "content": rng.choice(script.answers).replace("{ref}", ref)})
        count = rng.choices([0, 1, 2], weights=[45, 45, 10])[0]
        for topic in rng.sample(list(script.followups), k=min(count, max_followups, len(script.followups))):
            messages += self.pair(topic, followup=True, order=order)
        if rng.random() < close:
            messages += self.closing()
        return trim(messages)

    def handoff(self, opening: Topic, followups: Sequence[Topic]) -> list[Message]:
        order = self.order()
        messages = self.pair(opening, order=order)
        count = self.rng.choices([0, 1, 2], weights=[25, 50, 25])[0]
        for topic in self.rng.sample(list(followups), k=min(count, len(followups))):
            messages += self.pair(topic, followup=True, order=order)
        if self.rng.random() < 0.4:
            messages += self.closing(HANDOFF_CLOSINGS)
        return trim(messages)

    def any_request(self) -> list[Message]:
        """A short ordinary request, used after small talk or an off-topic question."""
        if self.rng.random() < 0.3:
            script = self.rng.choice(COLLECT_SCRIPTS)
            return self.collect(script, max_followups=0, close=0.0)
        return self.answer(self.rng.choice(ANSWER_SCRIPTS), max_followups=0, close=0.0)

    def greeting(self) -> list[Message]:
        messages = self.pair(GREETING) + self.any_request()
        if len(messages) < 8 and self.rng.random() < 0.5:
            messages += self.closing()
        return trim(messages)

    def goodbye(self) -> list[Message]:
        return trim(
            self.answer(self.rng.choice(ANSWER_SCRIPTS), max_followups=0, close=0.0)
            + self.closing(ANYTHING_ELSE)
            + [
                {"role": "user", "content": self.rng.choice(BYES)},
                {"role": "assistant", "content": self.rng.choice(FAREWELLS)},
            ]
        )

    def out_of_scope(self) -> list[Message]:
        messages = self.pair(self.rng.choice(OUT_OF_SCOPE))
        if self.rng.random() < 0.6:
            request = self.any_request()
            request[0]["content"] = as_followup(request[0]["content"], self.rng, OFF_TOPIC_RETURNS)
            messages += request
        elif self.rng.random() < 0.5:
            messages += self.pair(self.rng.choice(OUT_OF_SCOPE), followup=True)
        if self.rng.random() < 0.3:
            messages += self.closing()
        return trim(messages)


def trim(messages: list[Message], max_user_turns: int = 4) -> list[Message]:
    """Cut to at most `max_user_turns` exchanges; every exchange ends on an assistant reply."""
    return messages[: 2 * max_user_turns]


COLLECT_SCRIPTS = [ORDER_STATUS, CANCEL_ORDER, REFUND_STATUS, DAMAGED_ITEM, WARRANTY_CLAIM]
ANSWER_SCRIPTS = [
    RETURN_ITEM,
    SHIPPING_OPTIONS,
    SHIPPING_COST,
    INTERNATIONAL_SHIPPING,
    PAYMENT_METHODS,
    PAYMENT_FAILED,
    ACCOUNT_LOGIN,
    PRODUCT_AVAILABILITY,
    DISCOUNT_CODE,
]

# Intent name -> (number of conversations, how to draw one). Counts follow how often customers ask.
PLAN: dict[str, tuple[int, Callable[[Builder], list[Message]]]] = {
    "order_status": (26, lambda b: b.collect(ORDER_STATUS)),
    "return_item": (22, lambda b: b.answer(RETURN_ITEM)),
    "cancel_order": (18, lambda b: b.collect(CANCEL_ORDER)),
    "refund_status": (18, lambda b: b.collect(REFUND_STATUS)),
    "damaged_item": (18, lambda b: b.collect(DAMAGED_ITEM)),
    "shipping_options": (16, lambda b: b.answer(SHIPPING_OPTIONS)),
    "shipping_cost": (15, lambda b: b.answer(SHIPPING_COST)),
    "international_shipping": (16, lambda b: b.answer(INTERNATIONAL_SHIPPING)),
    "warranty_claim": (16, lambda b: b.collect(WARRANTY_CLAIM)),
    "change_address": (14, lambda b: b.collect(CHANGE_ADDRESS)),
    "payment_methods": (15, lambda b: b.answer(PAYMENT_METHODS)),
    "payment_failed": (14, lambda b: b.answer(PAYMENT_FAILED)),
    "account_login": (15, lambda b: b.answer(ACCOUNT_LOGIN)),
    "delete_account": (11, lambda b: b.answer(DELETE_ACCOUNT)),
    "privacy_data": (12, lambda b: b.answer(PRIVACY_DATA)),
    "product_availability": (14, lambda b: b.answer(PRODUCT_AVAILABILITY)),
    "discount_code": (14, lambda b: b.answer(DISCOUNT_CODE)),
    "complaint": (14, lambda b: b.handoff(COMPLAINT, [HANDOFF_TIMING, HANDOFF_DETAILS, COMPLAINT_BOT])),
    "human_agent": (14, lambda b: b.handoff(HUMAN_AGENT, [HANDOFF_TIMING, HANDOFF_DETAILS, HANDOFF_PHONE])),
    "out_of_scope": (16, Builder.out_of_scope),
    "greeting": (12, Builder.greeting),
    "goodbye": (10, Builder.goodbye),
}


def build(seed: int = SEED) -> list[dict[str, object]]:
    """All seed conversations, shuffled so that no intent sits in one block of the file."""
    builder = Builder(seed)
    seen: set[str] = set()
    drawn: list[tuple[str, list[Message]]] = []
    for intent, (count, draw) in PLAN.items():
        for _ in range(count):
            # Redraw exact repeats: a duplicate teaches nothing and skews the intent's weight.
            for _attempt in range(100):
                messages = draw(builder)
                key = json.dumps(messages)
                if key not in seen:
                    break
            seen.add(key)
            drawn.append((intent, messages))
    builder.rng.shuffle(drawn)
    return [
        {"id": f"seed-{number:04d}", "intent": intent, "messages": messages}
        for number, (intent, messages) in enumerate(drawn, start=1)
    ]


def main() -> None:
    conversations = build()
    with OUTPUT.open("w", encoding="utf-8") as handle:
        for conversation in conversations:
            handle.write(json.dumps(conversation, ensure_ascii=False) + "\n")
    print(f"wrote {len(conversations)} conversations to {OUTPUT}")


if __name__ == "__main__":
    main()
